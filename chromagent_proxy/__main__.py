from chromagent_proxy.cli import main

raise SystemExit(main())
