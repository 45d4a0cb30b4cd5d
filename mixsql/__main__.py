from mixsql.cli import main

main(prog_name="mixsql")
