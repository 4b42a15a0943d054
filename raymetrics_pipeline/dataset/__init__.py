"""The ``raymetrics`` dataset whichever backend holds it: its name rule, the protocol each backend
(Parseable, the embedded local store) fulfils, and one query layer over both."""
