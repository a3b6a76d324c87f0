"""The cockpit: a Textual app that drives and watches the migration."""
