from kexp.cli import main

main()
