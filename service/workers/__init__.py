"""Workers: processes that claim queue tasks and run them (generate; later filter, export, train)."""
