"""The provider boundary: the Retell client and webhook signatures."""
