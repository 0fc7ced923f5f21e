"""The operator side: tenants, termination, deletion certificates, the audit trail, signing, buffer reads."""
