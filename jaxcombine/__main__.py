from jaxcombine.cli.entry import main

main()
