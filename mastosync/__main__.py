from mastosync.cli import main

main()
