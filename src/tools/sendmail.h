/*
 * sendmail.h - `luamta sendmail` / `sendmail` / `mailq` (docs/admin.md, "sendmail and mailq").
 */
#ifndef SENDMAIL_H
#define SENDMAIL_H

/* sendmail_main - argv after the command name; as_mailq: list the queue (mailq, -bp). A sysexits(3) status. */
int	 sendmail_main(const char *cfgpath, int argc, char **argv, int as_mailq);

#endif
