"""Migration engine: MongoDB (live or mongodump) -> PostgreSQL, with no UI."""
