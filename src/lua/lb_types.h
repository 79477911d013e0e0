/*
 * lb_types.h - the objects Lua sees: the session (lb_session.c) and the message (lb_message.c). Each userdata
 * holds an id, never a pointer; once the core frees the object, its methods answer nil, "session closed".
 */
#ifndef LB_TYPES_H
#define LB_TYPES_H

#include <stdint.h>

struct lua_State;
struct proto_addr;
struct smtp_session;
struct smtp_tx;

void	 lb_session_open(struct lua_State *L);	/* register the metatables in a new state */
void	 lb_message_open(struct lua_State *L);
void	 lb_session_push(struct lua_State *L, uint64_t session_id);	/* [.. s] */
void	 lb_message_push(struct lua_State *L, uint64_t session_id);	/* [.. msg] */
void	 lb_addr_push(struct lua_State *L, const struct proto_addr *);	/* [.. {address, localpart, domain}] */
void	 lb_session_forget(struct lua_State *L, struct smtp_session *);	/* drop s.vars */
void	 lb_session_core(struct lua_State *L);	/* core.session_private, core.session_methods into [.. core] */
/* lb_header_line - the header "Name: value" from the arguments at name_idx and value_idx, checked (printable
 * name without ':', one-line value, 998 octets at most); gives a malloc'd string or raises a Lua error. */
char	*lb_header_line(struct lua_State *L, int name_idx, int value_idx);
void	 lb_dns_register(struct lua_State *L);	/* core.dns into [.. core] */
void	 lb_string_open(struct lua_State *L);	/* string.find/match/gmatch/gsub with a budget (lb_string.c) */
void	 lb_dkim_register(struct lua_State *L);	/* core.dkim_key into [.. core] (lb_dkim.c) */
int	 lb_dkim_sign(struct lua_State *L, struct smtp_tx *);	/* msg:dkim_sign(key, domain, selector) */

#endif
