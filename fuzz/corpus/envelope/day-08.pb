
mktdata-AAPL-20250314T200000Zmarket-data°‘®ŠŒ b
AAPL213.49€à ‘®ŠŒ