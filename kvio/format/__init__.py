"""The on-disk format (docs/FORMAT.md): partition files, manifests and commit records.

Nothing in this package touches a filesystem: writers write to file objects and readers read
from :class:`~kvio.format.source.Source` objects, so the format is testable on in-memory bytes.
"""
