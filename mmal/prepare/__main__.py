from mmal.prepare.cli import main

main()
