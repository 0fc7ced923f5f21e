"""Key hierarchy, key stores, AEAD envelopes and crypto-shredding. No Kafka in here.

master key (KEK, versioned) ─wraps─► tenant root key ─derives─► wrap key ─wraps─► data keys
                                                    ├─derives─► pseudonym key (HMAC of ids)
                                                    └─derives─► ingest HPKE key pairs (ingest.py)

Deleting a tenant's wrapped root makes every key below it, every pseudonym and its ingest
private keys unrecoverable at once; deleting a data key makes the records sealed under it
unreadable.
"""
