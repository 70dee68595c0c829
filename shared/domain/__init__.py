"""Rules with no I/O: states and their moves, the typed records, decisions, calling windows, call settings, the
request shapes, contacts, phones, outcomes and reasons."""
