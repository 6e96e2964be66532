from jaxcombine.entry import main

main()
