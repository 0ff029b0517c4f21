from d1ops.cli import main

main()
