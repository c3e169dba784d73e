"""Turning what a request names into images: the image wire codec (``decode``: compressed
arrays, header checks against the limits, pixels), Chroma's data loader protocol and its
``ImageLoader`` (``load``: ``file://`` within roots, remote URIs), the remote-URI policy
(``remote``, pure) and the fetching it allows (``fetch``: S3, GCS, Azure, HTTP)."""
