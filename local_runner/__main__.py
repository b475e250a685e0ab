from local_runner.runner import main

raise SystemExit(main())
