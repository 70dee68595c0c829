"""The stores: every MongoDB collection and Redis key is read and written here, and nowhere else
(tests/unit/test_layout_stores.py)."""
