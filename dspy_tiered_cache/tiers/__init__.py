"""Cache tiers: one module per tier behind the protocol in base.py."""
