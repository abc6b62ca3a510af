from gradgen.cli import main

main()
