"""Interop tests start a reference Postfix 3.7 on loopback (../shared/postfix/reference-postfix.sh)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
