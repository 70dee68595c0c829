"""outdial's domain: importable without a broker or a web server."""
