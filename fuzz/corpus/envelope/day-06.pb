
secmaster-20250314-000006security-master€óËºµ‰Œ RL
PGThe Procter & Gamble CompanyConsumer Staples"Personal Care Products