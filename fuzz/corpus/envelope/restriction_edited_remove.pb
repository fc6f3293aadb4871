
crm-HH-20417-restr-xom-removeadvisor-workstationÀ­í•ú‰Œ z
HH-20417R-NO-XOM0À­í•ú‰Œ