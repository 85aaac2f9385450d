"""The email ledger's domain: reports, the Email aggregate and the application."""
