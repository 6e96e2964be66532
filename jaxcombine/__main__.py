from jaxcombine.cli import main

main()
