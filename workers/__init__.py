"""outdial's processes: dramatiq actors, the clock, the web dyno and command-line tools."""
