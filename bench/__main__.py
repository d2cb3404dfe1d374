"""``python -m bench [p1 p2 ...] [--size tiny|default] [--json FILE]``."""

from __future__ import annotations

from bench._cli import main

raise SystemExit(main())
