from hacknip.cli import main

main()
