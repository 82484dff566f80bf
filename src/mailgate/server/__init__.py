"""The asyncio SMTP server: listener and per-connection sessions."""
