"""The wire contract shared by server and SDK: no I/O lives here."""
