// The reference's exported constants (@boxlite-ai/boxlite 0.10 constants.d.ts), same names and
// values, so programs that size or address boxes with them behave the same here.
export { DEFAULT_CPUS, DEFAULT_MEMORY_MIB } from '../runtime/options.js';

// ComputerBox (desktop automation) defaults
export const COMPUTERBOX_IMAGE = 'lscr.io/linuxserver/webtop:ubuntu-xfce';
export const COMPUTERBOX_CPUS = 2;
export const COMPUTERBOX_MEMORY_MIB = 2048;
export const COMPUTERBOX_DISPLAY_NUMBER = ':1';
export const COMPUTERBOX_DISPLAY_WIDTH = 1024;
export const COMPUTERBOX_DISPLAY_HEIGHT = 768;
export const COMPUTERBOX_GUI_HTTP_PORT = 3000;
export const COMPUTERBOX_GUI_HTTPS_PORT = 3001;

/** Seconds a desktop may take to come up. */
export const DESKTOP_READY_TIMEOUT = 60;
/** Seconds between readiness probes. */
export const DESKTOP_READY_RETRY_DELAY = 2;

/** BrowserBox: the Playwright server's port, one for every browser type. */
export const BROWSERBOX_PORT = 3000;

/** The guest's address on its network (the reference's fixed addressing). */
export const GUEST_IP = '192.168.127.2';

// SkillBox (AI CLI container with noVNC) defaults
export const SKILLBOX_IMAGE = 'ghcr.io/boxlite-ai/boxlite-skillbox:0.1.0';
export const SKILLBOX_MEMORY_MIB = 4096;
export const SKILLBOX_DISK_SIZE_GB = 10;
export const SKILLBOX_GUI_HTTP_PORT = 3000;
export const SKILLBOX_GUI_HTTPS_PORT = 3001;
