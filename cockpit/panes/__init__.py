"""The cockpit's panes, one module each."""
