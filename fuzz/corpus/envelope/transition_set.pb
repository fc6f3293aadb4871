
crm-HH-30112-transitionadvisor-workstation€ä™ÿ‰Œ ²+
HH-30112120000"40000*AAPL20.02