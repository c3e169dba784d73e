"""The read path over a collection's store: ``get`` and ``query`` (``query``: query texts and
images embedded on the model thread, vectors searched in the index, results shaped as
Chroma's). Sparse indexes and further reads of the HTTP API belong here too."""
