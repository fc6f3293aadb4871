
secmaster-20250314-000005security-masterÀîºµ‰Œ R:
JPMJPMorgan Chase & Co.
Financials"Diversified Banks