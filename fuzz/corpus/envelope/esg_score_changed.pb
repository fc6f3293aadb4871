
esg-msci-XOM-2025-03msci-esg-feed€ðÔ°òˆŒ j
XOMmsci38.5 €°à‹‡ˆŒ