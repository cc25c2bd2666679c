/**
 * Default configuration constants for BoxLite specialized boxes.
 *
 * These values match the Python SDK for consistency across language bindings.
 */
export declare const COMPUTERBOX_IMAGE = "lscr.io/linuxserver/webtop:ubuntu-xfce";
export declare const COMPUTERBOX_CPUS = 2;
export declare const COMPUTERBOX_MEMORY_MIB = 2048;
export declare const COMPUTERBOX_DISPLAY_NUMBER = ":1";
export declare const COMPUTERBOX_DISPLAY_WIDTH = 1024;
export declare const COMPUTERBOX_DISPLAY_HEIGHT = 768;
export declare const COMPUTERBOX_GUI_HTTP_PORT = 3000;
export declare const COMPUTERBOX_GUI_HTTPS_PORT = 3001;
export declare const DESKTOP_READY_TIMEOUT = 60;
export declare const DESKTOP_READY_RETRY_DELAY = 2;
export declare const BROWSERBOX_PORT = 3000;
export declare const DEFAULT_CPUS = 1;
export declare const DEFAULT_MEMORY_MIB = 512;
export declare const GUEST_IP = "192.168.127.2";
export declare const SKILLBOX_IMAGE = "ghcr.io/boxlite-ai/boxlite-skillbox:0.1.0";
export declare const SKILLBOX_MEMORY_MIB = 4096;
export declare const SKILLBOX_DISK_SIZE_GB = 10;
export declare const SKILLBOX_GUI_HTTP_PORT = 3000;
export declare const SKILLBOX_GUI_HTTPS_PORT = 3001;
