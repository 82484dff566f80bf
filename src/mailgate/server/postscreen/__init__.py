"""postscreen in the worker: Postfix 3.7's postscreen tests before smtpd (docs/postscreen.md).

`Postscreen.screen()` runs once per connection of a postscreen listener (a `postscreen` line
in master.cf) and says how the smtpd session goes on, if it does.
"""

from __future__ import annotations

from mailgate.server.postscreen.screen import Postscreen, SessionFactory
from mailgate.server.postscreen.settings import Action, PostscreenSettings

__all__ = ["Action", "Postscreen", "PostscreenSettings", "SessionFactory"]
