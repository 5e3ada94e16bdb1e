from migrations.run import run

run()
