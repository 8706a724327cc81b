"""`make demo`: the whole platform end to end on the embedded broker and Redis."""
