from cajasync.migrations.run import run

run()
