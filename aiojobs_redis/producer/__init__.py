"""What a web app imports: Queue (enqueue, read, manage), Job handles, tasks, flows,
events."""
