
mktdata-XOM-20250314T200000Zmarket-data°‘®ŠŒ b
XOM111.43€à ‘®ŠŒ