"""Development processes, not part of a deployment: the provider simulator, embedded services, a whole
stack as child processes, the demo campaign and the benchmark."""
