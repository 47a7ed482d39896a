/* test_loadtest.c - the built-in load-test model's answers. */
#include "config.h"

#include <jansson.h>
#include <stdlib.h>

#include "../tap.h"
#include "slowlane/backend.h"

int
main(void)
{
	const char *chat = "{\"model\":\"load-test\",\"messages\":[{\"role\":\"system\","
	    "\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"first\"},"
	    "{\"role\":\"assistant\",\"content\":\"ok\"},{\"role\":\"user\",\"content\":"
	    "[{\"type\":\"text\",\"text\":\"last \"},{\"type\":\"text\",\"text\":\"words\"}]}]}";
	const char *cmpl = "{\"model\":\"x\",\"prompt\":\"say this\"}";
	int status;
	char *s;
	json_t *o;

	s = loadtest_answer("/chat/completions", chat, strlen(chat), 1749061362809ull, &status);
	o = s ? json_loads(s, 0, NULL) : NULL;
	ok(status == 200 && o, "chat answer is JSON");
	is_str(json_string_value(json_object_get(o, "object")), "chat.completion", "object");
	is_str(json_string_value(json_object_get(json_object_get(json_array_get(
	    json_object_get(o, "choices"), 0), "message"), "content")), "last words",
	    "echoes the last user message (text parts joined)");
	is_int(json_integer_value(json_object_get(o, "created")), 1749061362, "created in s");
	{
		json_t *u = json_object_get(o, "usage");
		json_int_t p = json_integer_value(json_object_get(u, "prompt_tokens"));
		json_int_t c = json_integer_value(json_object_get(u, "completion_tokens"));
		ok(p > 0 && c == 2 && json_integer_value(json_object_get(u, "total_tokens")) == p + c,
		    "usage is plausible");
	}
	json_decref(o);
	free(s);

	s = loadtest_answer("/completions", cmpl, strlen(cmpl), 0, &status);
	o = s ? json_loads(s, 0, NULL) : NULL;
	is_str(json_string_value(json_object_get(o, "object")), "text_completion", "completion");
	is_str(json_string_value(json_object_get(json_array_get(json_object_get(o, "choices"),
	    0), "text")), "say this", "echoes the prompt");
	is_str(json_string_value(json_object_get(o, "model")), "x", "keeps the model name");
	json_decref(o);
	free(s);

	ok(loadtest_answer("/completions", "nope", 4, 0, &status) == NULL, "non-JSON refused");
	return tap_done();
}
