"""`python -m alignez_eval.models convert GGUF OUT_DIR CHECK_JSON`: the conversion subprocess."""

from __future__ import annotations

import sys

from alignez_eval.models.convert import main

raise SystemExit(main(sys.argv[1:]))
