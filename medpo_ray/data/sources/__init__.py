"""Record sources: one interface, an adapter per dataset layout."""
