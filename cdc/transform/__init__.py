"""Row changes into document operations (pure): value conversion and table mappings."""
