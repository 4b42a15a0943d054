"""Ray's own exact figures (jobs, and tasks by name and state per job) from the dashboard's HTTP APIs, no Ray import."""
