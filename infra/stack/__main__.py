from infra.stack.cli import main

main()
