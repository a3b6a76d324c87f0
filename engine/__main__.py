import sys

from engine.core.processes import start_fork_server_for

start_fork_server_for(sys.argv[1:])

from engine.cli import main  # noqa: E402

sys.exit(main())
