from kpcompile.cli import main

main()
